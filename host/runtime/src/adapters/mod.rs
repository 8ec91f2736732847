//! The components as the model's seams: [`ComponentConverter`] is a
//! `tapedeck_model::convert::Converter`, [`NotifierPlugin`](crate::NotifierPlugin) a
//! `tapedeck_model::notify::Composer`. (The auth stage's adapter needs the user store and
//! lives in the `tapedeck` binary.)

mod composer;
mod converter;

pub use converter::{AudioLength, ComponentConverter, classify, convert_options};
