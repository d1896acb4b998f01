//! Model client (being written).
