-- Signing keys for access tokens, shared by every instance. Which key signs, which are published and
-- which are still accepted follows from the activation times: a key is published from creation,
-- signs from activates_at until the next key activates, and is accepted (and published) for one
-- access-token lifetime plus a margin after that.
CREATE TABLE signing_keys (
    -- The RFC 7638 thumbprint of the public key (for HS256: of the symmetric key).
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL CHECK (alg IN ('ES256', 'EdDSA', 'HS256')),
    -- The public key as a JWK (no private members); NULL for HS256, whose key is GATEHOUSE_JWT_SECRET.
    public_jwk   JSONB,
    -- PKCS#8 DER of the private key, encrypted (ChaCha20-Poly1305, nonce first, the kid as associated
    -- data) under a key derived from GATEHOUSE_JWT_SECRET; NULL for HS256.
    private_key  BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    activates_at TIMESTAMPTZ NOT NULL,
    CHECK ((alg = 'HS256') = (private_key IS NULL AND public_jwk IS NULL))
);
CREATE INDEX signing_keys_activates_at_idx ON signing_keys (activates_at);

-- Other services introspect tokens (RFC 7662) with a token of their own that has this scope.
INSERT INTO roles (name, description) VALUES ('service', 'Another service: may introspect tokens');
INSERT INTO scopes (name, description) VALUES ('tokens:introspect', 'Introspect tokens (RFC 7662)');
INSERT INTO role_scopes (role_name, scope_name) VALUES ('service', 'tokens:introspect');

-- A deployment from before keys had ids signed HS256 tokens without a kid: this row stands for that
-- key, so those tokens stay accepted until they expire after the first key of the configured
-- algorithm takes over (a new database has no users, and needs no such row).
INSERT INTO signing_keys (kid, alg, activates_at)
SELECT 'hs256-legacy', 'HS256', now() - interval '1 day' WHERE EXISTS (SELECT 1 FROM users);
