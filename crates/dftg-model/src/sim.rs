//! Model simulator (being written).
