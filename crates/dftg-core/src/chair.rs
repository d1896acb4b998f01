//! CHAIR-compatible extraction and metric (placeholder; being written).
