//! The operator CLI: `validate` and `list`.

pub mod list;
pub mod validate;
