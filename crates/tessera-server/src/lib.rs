//! tessera server
