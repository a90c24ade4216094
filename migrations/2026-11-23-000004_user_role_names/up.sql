-- A user's role names, sorted. Every API request needs the caller's current roles together with the
-- user row; as a function the lookup fits in one prepared (and cached) statement.
CREATE FUNCTION user_role_names(p_user_id UUID) RETURNS TEXT[]
    LANGUAGE sql STABLE
AS $$
    SELECT coalesce(array_agg(role_name ORDER BY role_name), '{}')
    FROM user_roles
    WHERE user_id = p_user_id
$$;
