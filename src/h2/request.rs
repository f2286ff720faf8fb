//! A decoded header list checked and made a request head (RFC 9113, 8.2, 8.3). INTERFACE DRAFT.
