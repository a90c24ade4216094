DROP TABLE auth_events;
DROP TABLE items;
DROP TABLE user_roles;
DROP TABLE users;
DROP TABLE role_scopes;
DROP TABLE scopes;
DROP TABLE roles;
