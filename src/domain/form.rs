//! A strict reader for `application/x-www-form-urlencoded` bodies.
//!
//! RFC 6749 §3.2 forbids repeating a parameter, and a password with bytes that are not UTF-8 must be
//! refused rather than silently altered, so neither lossy decoding nor "last value wins" will do.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    #[error("the body must be application/x-www-form-urlencoded")]
    WrongContentType,
    #[error("the body is not valid UTF-8")]
    NotUtf8,
    #[error("parameter `{0}` appears more than once")]
    Duplicate(String),
    #[error("parameters must not contain NUL characters")]
    Nul,
}

#[derive(Debug, Default)]
pub struct FormFields(HashMap<String, String>);

impl FormFields {
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Self, FormError> {
        let is_form = content_type
            .and_then(|value| value.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(FormError::WrongContentType);
        }
        Self::parse_query(std::str::from_utf8(body).map_err(|_| FormError::NotUtf8)?)
    }

    /// Parses urlencoded `name=value&…` text (a form body, or a URL's query string) with the same
    /// rules: no repeated names, valid UTF-8, no NUL.
    pub fn parse_query(text: &str) -> Result<Self, FormError> {
        let mut fields = HashMap::new();
        for pair in text.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            // No legitimate field holds U+0000, and PostgreSQL text cannot store it.
            if name.contains('\0') || value.contains('\0') {
                return Err(FormError::Nul);
            }
            if fields.insert(name.clone(), value).is_some() {
                return Err(FormError::Duplicate(name));
            }
        }
        Ok(Self(fields))
    }

    /// Every field name (for checkbox groups, whose fields are named `group.value`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The ticked values of the checkbox group whose fields are named `prefix` + value, sorted.
    pub fn ticked(&self, prefix: &str) -> Vec<String> {
        let mut values: Vec<String> =
            self.names().filter_map(|name| name.strip_prefix(prefix)).map(str::to_owned).collect();
        values.sort();
        values
    }

    /// The value of `name`, however empty: a password field left blank is "", not absent.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name`; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|value| !value.is_empty())
    }
}

/// Decodes one urlencoded name or value (`+` is a space), refusing what is not UTF-8.
pub(crate) fn decode(raw: &str) -> Result<String, FormError> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8().map(|text| text.into_owned()).map_err(|_| FormError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    #[test]
    fn fields_are_decoded() {
        let form = FormFields::parse(FORM, b"username=al+ice&password=p%26ss%3D&scope=").unwrap();
        assert_eq!(form.get("username"), Some("al ice"));
        assert_eq!(form.get("password"), Some("p&ss="));
        assert_eq!(form.get("scope"), None);
    }

    #[test]
    fn a_charset_parameter_is_fine_but_json_is_not() {
        assert!(FormFields::parse(Some("application/x-www-form-urlencoded; charset=UTF-8"), b"a=1").is_ok());
        assert_eq!(FormFields::parse(Some("application/json"), b"{}").unwrap_err(), FormError::WrongContentType);
        assert_eq!(FormFields::parse(None, b"a=1").unwrap_err(), FormError::WrongContentType);
    }

    #[test]
    fn repeated_fields_and_bad_utf8_are_refused() {
        assert_eq!(FormFields::parse(FORM, b"a=1&a=2").unwrap_err(), FormError::Duplicate("a".into()));
        assert_eq!(FormFields::parse(FORM, b"a=%ff").unwrap_err(), FormError::NotUtf8);
        assert_eq!(FormFields::parse(FORM, b"a=\xff").unwrap_err(), FormError::NotUtf8);
        assert_eq!(FormFields::parse(FORM, b"username=al%00ice").unwrap_err(), FormError::Nul);
    }

    #[test]
    fn a_checkbox_group_is_its_ticked_values_sorted() {
        let form = FormFields::parse_query("role.user=on&name=x&role.admin=on&grant.password=on").unwrap();
        assert_eq!(form.ticked("role."), ["admin", "user"]);
        assert_eq!(form.ticked("scope."), Vec::<String>::new());
    }
}
