//! Value types that more than one kind's config takes (`"auto"` or a
//! boolean, a name or a list of names), so each kind's struct says what a
//! key holds without repeating how it is read.

use serde::Deserialize;

/// `"auto"`, or a boolean that overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum AutoOr {
    Set(bool),
    #[default]
    #[serde(with = "auto_word")]
    Auto,
}

mod auto_word {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let word = String::deserialize(d)?;
        if word == "auto" {
            Ok(())
        } else {
            Err(D::Error::custom(format!(
                "expected \"auto\", true or false, found \"{word}\""
            )))
        }
    }
}

/// `column = "a"` or `column = ["a", "b"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}
