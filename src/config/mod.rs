//! Plugin and task configuration: types, hclspec schemas and cty-msgpack decoding (pure).

pub mod cty;
pub mod duration;
pub mod plugin;
pub mod schema;
pub mod task;

pub use plugin::PluginConfig;
pub use task::TaskUserConfig;

/// A configuration that could not be decoded or failed validation; the message names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config is not valid cty-msgpack: {0}")]
    Decode(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}
