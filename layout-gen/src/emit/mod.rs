//! Code generators. Each reads only the [`crate::LayoutModel`].

pub mod cpp;
pub mod rust;
mod text;
