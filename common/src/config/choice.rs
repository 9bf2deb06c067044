//! Configuration words as Rust enums: each `Kind::Choice` key of the parameter table
//! reads into an enum whose words are declared once, with the enum, by `choice!`.
//!
//! The macro writes the enum, its [`Choice`] impl (`WORDS` in declaration order,
//! `from_word`, `word`), an inherent `name()` giving the word (what logs and the
//! effective config print) and `Display`. The table declares such a key as
//! `Kind::Choice(BareNewline::WORDS)`, so the words the loader accepts, the words the
//! reference lists and the words the code matches on are the same list; the reader
//! refuses (as an internal error, caught by the unit tests) a key read as an enum
//! whose words are not the ones the table declares.

/// A closed set of configuration words, each naming one variant.
pub trait Choice: Copy + Sized + 'static {
    /// Every word, in declaration order (the order the reference lists them in).
    const WORDS: &'static [&'static str];

    /// The variant of the first word: what a reader falls back to, with an error
    /// recorded, when neither the value nor the table's default names a variant.
    const FIRST: Self;

    /// The variant a word names; `None` for any other text (words are exact, lower case).
    fn from_word(word: &str) -> Option<Self>;

    /// The word of this variant, as written in the config file.
    fn word(self) -> &'static str;
}

/// Declares a configuration enum and its words:
///
/// ```ignore
/// choice! {
///     /// What a bare CR or LF in DATA gets.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub enum BareNewline {
///         Reject = "reject",
///         Normalize = "normalize",
///     }
/// }
/// ```
macro_rules! choice {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(#[$fmeta:meta])* $first:ident = $fword:literal
            $( , $(#[$vmeta:meta])* $variant:ident = $word:literal )* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $(#[$fmeta])* $first,
            $( $(#[$vmeta])* $variant ),*
        }

        impl $crate::config::choice::Choice for $name {
            const WORDS: &'static [&'static str] = &[$fword $(, $word)*];
            const FIRST: Self = $name::$first;

            fn from_word(word: &str) -> Option<Self> {
                match word {
                    $fword => Some($name::$first),
                    $( $word => Some($name::$variant), )*
                    _ => None,
                }
            }

            fn word(self) -> &'static str {
                match self {
                    $name::$first => $fword,
                    $( $name::$variant => $word, )*
                }
            }
        }

        impl $name {
            /// The config word (as written in the file, in logs and in the effective
            /// config).
            pub fn name(self) -> &'static str {
                <$name as $crate::config::choice::Choice>::word(self)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

pub(crate) use choice;

#[cfg(test)]
mod tests {
    use super::super::hooks::{HookListener, HookStage, OnError};
    use super::super::sections::{
        AuthBackend, BareNewline, Facility, LogTarget, MailboxFormat, TlsLevel,
    };
    use super::Choice;

    /// Every word names a variant whose word is that word, and nothing else does.
    fn round_trips<T: Choice + PartialEq + std::fmt::Debug>() {
        let mut seen: Vec<T> = Vec::new();
        for w in T::WORDS {
            let v = T::from_word(w).unwrap_or_else(|| panic!("{w} does not parse"));
            assert_eq!(v.word(), *w);
            assert!(!seen.contains(&v), "{w} names a variant twice");
            seen.push(v);
        }
        assert_eq!(T::from_word(""), None);
        assert_eq!(T::from_word("no-such-word"), None);
        let upper = T::WORDS[0].to_ascii_uppercase();
        assert_eq!(T::from_word(&upper), None, "words are exact");
    }

    #[test]
    fn every_config_enum_round_trips_its_words() {
        round_trips::<BareNewline>();
        round_trips::<MailboxFormat>();
        round_trips::<AuthBackend>();
        round_trips::<TlsLevel>();
        round_trips::<LogTarget>();
        round_trips::<Facility>();
        round_trips::<HookStage>();
        round_trips::<OnError>();
        round_trips::<HookListener>();
        round_trips::<super::super::values::AccessAction>();
    }

    #[test]
    fn display_and_name_print_the_word() {
        assert_eq!(BareNewline::Normalize.to_string(), "normalize");
        assert_eq!(TlsLevel::Verify.name(), "verify");
        assert_eq!(Facility::Local3.code(), 19);
        assert_eq!(Facility::Mail.code(), 2);
    }
}
