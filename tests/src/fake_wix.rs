//! Fake Wix API (being written).
