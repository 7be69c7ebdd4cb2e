pub mod manifest;
pub mod translate;
