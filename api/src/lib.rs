//! The HTTP API of zedops (see DESIGN §4); grows in the API issue.
