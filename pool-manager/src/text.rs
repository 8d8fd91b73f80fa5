//! Free text from outside warmpool (a cloud's fault or error page, a
//! mysqld's error packet) is as long as its sender makes it. Kept whole, it
//! went into the store (a pool's and an instance's `last_error`), every
//! pool listing (one of over 4 MiB failed ListPools, GetPool and WatchPools
//! for every client, for as long as the store kept it), the events and the
//! logs. It is cut where it comes in ([`MAX_CLOUD_MESSAGE_CHARS`]), and
//! again wherever warmpool stores it or sends it to clients
//! ([`MAX_KEPT_TEXT_CHARS`], [`capped`]), so that no source missed where it
//! comes in can do that.

/// The most of one message a cloud sends (a fault's, an error page's,
/// Keystone's reason) warmpool keeps, in characters.
pub const MAX_CLOUD_MESSAGE_CHARS: usize = 300;

/// The most of any free text warmpool stores or sends to clients (a pool's
/// or an instance's `last_error`, why a release or a quota poll failed), in
/// characters: room for a cloud's message cut to
/// [`MAX_CLOUD_MESSAGE_CHARS`] and warmpool's words around it.
pub const MAX_KEPT_TEXT_CHARS: usize = 1000;

/// `text` cut to at most `max_chars` characters (on a character boundary),
/// its end saying how many more there were: "... (N more characters)".
/// Text that fits is kept whole, so cutting again changes nothing.
pub fn cut(text: &str, max_chars: usize) -> String {
    let total = text.chars().count();
    if total <= max_chars {
        return text.to_owned();
    }
    // The note for `total` is at least as long as the one for what is
    // actually left out, so the cut text and its note fit in `max_chars`.
    let kept = max_chars.saturating_sub(cut_note(total).chars().count());
    let at = text
        .char_indices()
        .nth(kept)
        .map_or(text.len(), |(at, _)| at);
    format!("{}{}", &text[..at], cut_note(total - kept))
}

fn cut_note(left_out: usize) -> String {
    format!("... ({left_out} more characters)")
}

/// `text` cut to [`MAX_KEPT_TEXT_CHARS`]: what warmpool stores or sends of
/// free text that may have come from outside.
pub fn capped(text: String) -> String {
    if text.len() <= MAX_KEPT_TEXT_CHARS {
        // Bytes are at least as many as characters: no count needed.
        return text;
    }
    cut(&text, MAX_KEPT_TEXT_CHARS)
}

/// [`capped`] in place, for an optional field.
pub fn cap(text: &mut Option<String>) {
    if let Some(t) = text.take() {
        *text = Some(capped(t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(cut("ünïcode", 7), "ünïcode");
        assert_eq!(
            capped("x".repeat(MAX_KEPT_TEXT_CHARS)).len(),
            MAX_KEPT_TEXT_CHARS
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_saying_how_much() {
        let text = format!("Nova: {}", "ü".repeat(5000));
        let cut_text = cut(&text, 300);
        let count = cut_text.chars().count();
        assert!(count <= 300, "{count} characters");
        let left_out: usize = cut_text
            .rsplit_once("... (")
            .and_then(|(_, note)| note.strip_suffix(" more characters)"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no note: {cut_text}"));
        let kept = cut_text.split("... (").next().unwrap();
        assert!(text.starts_with(kept));
        assert_eq!(kept.chars().count() + left_out, text.chars().count());
    }

    /// Stored text is compared with what would be written again: cutting
    /// what was cut leaves it alone.
    #[test]
    fn cutting_again_changes_nothing() {
        for len in [999, 1000, 1001, 1050, 10_000, 1 << 20] {
            let once = capped("é".repeat(len));
            assert!(once.chars().count() <= MAX_KEPT_TEXT_CHARS, "{len}");
            assert_eq!(capped(once.clone()), once, "{len}");
        }
        let mut field = Some("F".repeat(1 << 16));
        cap(&mut field);
        assert!(field.as_ref().unwrap().len() <= MAX_KEPT_TEXT_CHARS);
    }
}
