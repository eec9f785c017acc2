//! Receipt layouts (being written).
