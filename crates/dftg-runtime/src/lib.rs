//! dftg-runtime: store and queue traits.
