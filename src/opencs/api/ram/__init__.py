"""The RAM API (2015-05-01, RPC style on "/"): users, AccessKeys and policies of the caller's account."""
