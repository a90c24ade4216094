// gatehouse: the browser side of passkeys (WebAuthn). Buttons marked data-passkey="register",
// "verify" or "sign-in" stay hidden unless this browser can make and use passkeys; every other form
// works without this script. The server keeps each ceremony's state and checks every answer.
(function () {
  "use strict";

  function csrfToken() {
    var field = document.querySelector('input[name="csrf_token"]');
    return field ? field.value : "";
  }

  async function post(url, body) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
      body: JSON.stringify(body || {})
    });
    var answer = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      throw new Error(answer.error || "The passkey did not work.");
    }
    return answer;
  }

  async function register(button) {
    var nameField = document.getElementById(button.dataset.nameField);
    var passwordField = document.getElementById(button.dataset.passwordField);
    var begun = await post("/account/passkeys/begin", { current_password: passwordField ? passwordField.value : "" });
    var options = PublicKeyCredential.parseCreationOptionsFromJSON(begun.options.publicKey);
    var credential = await navigator.credentials.create({ publicKey: options });
    await post("/account/passkeys/finish", {
      ceremony: begun.ceremony,
      name: nameField ? nameField.value : "",
      credential: credential.toJSON()
    });
    window.location.assign("/account/second-factor?done=passkey-added");
  }

  async function authenticate(button, begin, finish) {
    var begun = await post(begin);
    var options = PublicKeyCredential.parseRequestOptionsFromJSON(begun.options.publicKey);
    var credential = await navigator.credentials.get({ publicKey: options });
    var done = await post(finish, {
      ceremony: begun.ceremony,
      credential: credential.toJSON(),
      next: button.dataset.next || null
    });
    window.location.assign(done.redirect);
  }

  var ceremonies = {
    register: register,
    verify: function (button) { return authenticate(button, "/login/verify/passkey/begin", "/login/verify/passkey/finish"); },
    "sign-in": function (button) { return authenticate(button, "/login/passkey/begin", "/login/passkey/finish"); }
  };

  var supported = window.PublicKeyCredential &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function";

  document.querySelectorAll("[data-passkey]").forEach(function (button) {
    var ceremony = ceremonies[button.dataset.passkey];
    if (!supported || !ceremony) {
      return;
    }
    var status = document.getElementById(button.dataset.status);
    var controls = button.closest("[data-passkey-controls]") || button;
    controls.hidden = false;
    button.addEventListener("click", async function () {
      button.disabled = true;
      if (status) { status.textContent = ""; }
      try {
        await ceremony(button);
      } catch (error) {
        if (status) {
          status.textContent = error.name === "NotAllowedError"
            ? "The passkey request was cancelled or timed out."
            : error.message;
        }
      } finally {
        button.disabled = false;
      }
    });
  });
}());
