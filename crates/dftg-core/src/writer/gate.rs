//! The verification gate.
