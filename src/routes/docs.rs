//! The OpenAPI document and the Swagger UI at `/docs`.
//!
//! Paths are collected by utoipa-actix-web from the very services the server registers, so the
//! document cannot leave out a documented route: registering an API service without
//! `#[utoipa::path]` does not compile.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::openapi::security::{Flow, OAuth2, Password, Scopes, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;
use utoipa_swagger_ui::{SwaggerUi, oauth};

use crate::domain::ScopeName;

/// The name the operations use for the OAuth2 scheme.
pub const OAUTH2: &str = "oauth2";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gatehouse",
        description = "Sign people and programs in. Programs trade a username and password for a bearer token \
                       at `POST /token` (OAuth2 password grant, RFC 6749 §4.3) and call `/api/*` with it, \
                       limited by scopes. Errors follow RFC 6749 §5.2 and RFC 6750 §3."
    ),
    modifiers(&OAuth2PasswordFlow),
    tags(
        (name = "oauth", description = "Tokens: grant, refresh, revoke, server metadata"),
        (name = "oidc", description = "OpenID Connect: userinfo and provider metadata (sign-in itself is the /authorize page)"),
        (name = "users", description = "The signed-in user"),
        (name = "tokens", description = "Your personal access tokens: `gth_…` credentials for scripts, used as `Authorization: Bearer gth_…` wherever an access token works"),
        (name = "items", description = "Items: public ones for everybody, your own with `items:read`"),
        (name = "admin", description = "For the `admin` role"),
        (name = "operations", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct OAuth2PasswordFlow;

impl Modify for OAuth2PasswordFlow {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let scopes: Scopes = ScopeName::DESCRIBED.iter().map(|(name, description)| (*name, *description)).collect();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            OAUTH2,
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/token", scopes))],
                "OAuth2 password grant: trade a username and password for a bearer token.",
            )),
        );
    }
}

/// Constraints the derive cannot state, applied to the finished document (the schemas join the
/// document only as the routes are collected, after `Modify` runs). The descriptions live with the
/// types, in `oauth.rs`, `oauth::introspect` and `api::admin_clients`.
///
/// - The OAuth2 forms (`FormFields`) ignore fields they do not know, but refuse any field given twice
///   (RFC 6749 §3.2, not expressible here) and a NUL anywhere, in a name or a value: extra fields are
///   single strings, and no name or value holds U+0000. `/revoke` and `/introspect` refuse an empty
///   `token` (RFC 7009 §2.1, RFC 7662 §2.1: it is required), as an empty field counts as absent.
/// - The introspection answer is `{"active": false}` alone, or `"active": true` with the token's
///   details (the derive would say "details or null" of the flattened `Option`).
/// - A public client cannot have the `client_credentials` grant.
fn state_form_constraints(document: &mut OpenApiDocument) {
    use utoipa::openapi::schema::{
        AdditionalProperties, AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
    };
    use utoipa::openapi::{Ref, RefOr};
    const NO_NUL: &str = r"^[^\x00]*$";
    let no_nul = || ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL)).build();
    let Some(components) = document.components.as_mut() else { return };
    for name in ["RevokeForm", "TokenForm", "IntrospectForm"] {
        let Some(RefOr::T(Schema::Object(form))) = components.schemas.get_mut(name) else { continue };
        form.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::T(Schema::Object(no_nul())))));
        form.property_names = Some(Box::new(Schema::Object(no_nul())));
        for (field, property) in form.properties.iter_mut() {
            let RefOr::T(Schema::Object(property)) = property else { continue };
            property.pattern = Some(NO_NUL.to_owned());
            if field == "token" {
                property.min_length = Some(1);
            }
        }
    }
    let active = |value: bool| {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("active", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([value])))
            .required("active")
    };
    if let Some(RefOr::T(Schema::AllOf(introspection))) = components.schemas.get("Introspection") {
        let answer = OneOfBuilder::new()
            .description(introspection.description.clone())
            .item(active(false).additional_properties(Some(AdditionalProperties::FreeForm(false))))
            .item(AllOfBuilder::new().item(Ref::from_schema_name("TokenDetails")).item(active(true)))
            .build();
        components.schemas.insert("Introspection".to_owned(), RefOr::T(Schema::OneOf(answer)));
    }
    if let Some(RefOr::T(Schema::Object(client))) = components.schemas.get_mut("NewClientBody") {
        let description = client.description.take();
        let body = std::mem::take(client);
        let grants =
            ["authorization_code", "refresh_token", "password", "urn:ietf:params:oauth:grant-type:device_code"];
        let not_public = ObjectBuilder::new()
            .property("public", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([false])));
        let no_client_credentials = ObjectBuilder::new().property(
            "grant_types",
            ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(grants))),
        );
        let rule = AnyOfBuilder::new().item(not_public).item(no_client_credentials);
        let checked = AllOfBuilder::new().description(description).item(body).item(rule).build();
        components.schemas.insert("NewClientBody".to_owned(), RefOr::T(Schema::AllOf(checked)));
    }
}

/// The document as served, with the paths of every documented route.
pub fn openapi() -> OpenApiDocument {
    let (_, document) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(super::documented)
        .split_for_parts();
    let mut document = document;
    state_form_constraints(&mut document);
    document
}

/// `/openapi.json`, `/docs` (Swagger UI, assets compiled into the binary) and its redirect.
pub fn configure(cfg: &mut web::ServiceConfig, mut document: OpenApiDocument) {
    state_form_constraints(&mut document);
    let swagger = SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", document).oauth(
        oauth::Config::new()
            .app_name("gatehouse")
            // No client is registered: /token accepts any client_id and ignores it.
            .client_id("swagger-ui")
            // Pre-ticked: what every user may have. Admins tick the admin scopes themselves.
            .scopes([ScopeName::PROFILE, ScopeName::ITEMS_READ, ScopeName::ITEMS_WRITE].map(str::to_owned).to_vec()),
    );
    cfg.service(swagger).route("/docs", web::get().to(redirect_to_docs));
}

/// Swagger UI loads its assets relative to its page, so it lives at `/docs/`.
async fn redirect_to_docs() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/docs/")).finish()
}

/// The body of every error answer of the API and the token endpoint (RFC 6749 §5.2, RFC 6750 §3).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes `errors::ErrorBody` for the document; never built.
pub struct ErrorResponse {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type`, `invalid_scope`, `slow_down`,
    /// `invalid_token`, `insufficient_scope`, `inactive_user`, `temporarily_unavailable`, …
    #[schema(example = "invalid_grant")]
    error: String,
    #[schema(example = "Incorrect username or password")]
    error_description: Option<String>,
}
