//! Response heads encoded with HPACK without the dynamic table. INTERFACE DRAFT.
