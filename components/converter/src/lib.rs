//! Converter component.
