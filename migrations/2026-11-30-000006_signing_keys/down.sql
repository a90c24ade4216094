DELETE FROM role_scopes WHERE role_name = 'service' OR scope_name = 'tokens:introspect';
DELETE FROM scopes WHERE name = 'tokens:introspect';
DELETE FROM roles WHERE name = 'service';
DROP TABLE signing_keys;
