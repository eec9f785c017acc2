//! Money on receipts is the one money type of the workspace, [`wixprint_shared::money::Money`].

pub(crate) use wixprint_shared::money::Money;
