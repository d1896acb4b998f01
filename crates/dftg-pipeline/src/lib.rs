//! dftg-pipeline: stages and runner.
