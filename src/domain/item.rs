/// A new item as a client submitted it, checked before it reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemDraft {
    pub title: String,
    pub body: String,
    pub public: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ItemDraftError {
    #[error("title must not be empty")]
    EmptyTitle,
    #[error("title must be at most {max} characters", max = ItemDraft::MAX_TITLE_CHARS)]
    TitleTooLong,
    #[error("body must be at most {max} characters", max = ItemDraft::MAX_BODY_CHARS)]
    BodyTooLong,
    /// PostgreSQL text cannot hold U+0000, and no title or body needs it.
    #[error("title and body must not contain NUL characters")]
    NulCharacter,
}

impl ItemDraft {
    pub const MAX_TITLE_CHARS: usize = 200;
    pub const MAX_BODY_CHARS: usize = 10_000;

    pub fn new(title: &str, body: Option<&str>, public: Option<bool>) -> Result<Self, ItemDraftError> {
        if title.contains('\0') || body.is_some_and(|b| b.contains('\0')) {
            return Err(ItemDraftError::NulCharacter);
        }
        // The limit counts the title as sent, spaces around it included (as the API document's maxLength does).
        let too_long = title.chars().count() > Self::MAX_TITLE_CHARS;
        let title = title.trim();
        if title.is_empty() {
            return Err(ItemDraftError::EmptyTitle);
        }
        if too_long {
            return Err(ItemDraftError::TitleTooLong);
        }
        let body = body.unwrap_or_default();
        if body.chars().count() > Self::MAX_BODY_CHARS {
            return Err(ItemDraftError::BodyTooLong);
        }
        Ok(Self { title: title.to_owned(), body: body.to_owned(), public: public.unwrap_or(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(ItemDraft::new("  hi ", None, None).unwrap().title, "hi");
        assert_eq!(ItemDraft::new("   ", None, None), Err(ItemDraftError::EmptyTitle));
        assert_eq!(ItemDraft::new(&"x".repeat(201), None, None), Err(ItemDraftError::TitleTooLong));
        assert_eq!(ItemDraft::new("t", Some(&"b".repeat(10_001)), None), Err(ItemDraftError::BodyTooLong));
        assert_eq!(ItemDraft::new("a\0b", None, None), Err(ItemDraftError::NulCharacter));
    }
}
