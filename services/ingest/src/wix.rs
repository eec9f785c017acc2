//! Wix webhook verification and Wix JSON → domain Order mapping (being written).
