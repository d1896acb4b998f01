//! The template writer.
