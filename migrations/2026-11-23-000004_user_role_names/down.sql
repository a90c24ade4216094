DROP FUNCTION user_role_names(UUID);
