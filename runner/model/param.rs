//! Runbook parameters.

use serde_json::Value;

use crate::source::Pos;

/// The type of a parameter's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// Text.
    String,
    /// A whole number.
    Int,
    /// true or false.
    Bool,
    /// A list of values.
    List,
    /// A mapping of names to values.
    Map,
}

impl ParamType {
    /// The name used in runbooks.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::List => "list",
            Self::Map => "map",
        }
    }

    /// Every name [`ParamType::parse`] accepts.
    pub const NAMES: &[&str] = &[
        "string", "str", "int", "integer", "bool", "boolean", "list", "array", "map", "object",
    ];

    /// Parses the name used in runbooks.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" | "str" => Self::String,
            "int" | "integer" => Self::Int,
            "bool" | "boolean" => Self::Bool,
            "list" | "array" => Self::List,
            "map" | "object" => Self::Map,
            _ => return None,
        })
    }

    /// Whether a JSON value has this type.
    pub fn admits(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Int => value.is_i64() || value.is_u64(),
            Self::Bool => value.is_boolean(),
            Self::List => value.is_array(),
            Self::Map => value.is_object(),
        }
    }
}

/// A declared parameter.
#[derive(Clone, Debug)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: ParamType,
    /// Whether a value must be given (no default).
    pub required: bool,
    /// The value when none is given.
    pub default: Option<Value>,
    /// A regular expression a string value must match (anchored by the author).
    pub pattern: Option<regex::Regex>,
    /// The only values allowed.
    pub allowed: Option<Vec<Value>>,
    /// Never written or printed in clear.
    pub secret: bool,
    /// A secret value shorter than [`crate::secrets::MIN_ANYWHERE`] characters is accepted
    /// (and masked only as a whole word) instead of refused.
    pub short_secret_ok: bool,
    /// An environment variable to take the value from when none is given.
    pub env: Option<String>,
    /// A file to read the value from (trimmed) when none is given.
    pub file: Option<String>,
    /// A secret store to read the value from when none is given (after `env` and `file`).
    pub from: Option<crate::openbao::Source>,
    /// One line on what it is for.
    pub description: Option<String>,
    /// Where it is declared.
    pub pos: Pos,
}
