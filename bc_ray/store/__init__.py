"""The embedding store: where bytes live (io), how commits become atomic (log), what a version is (state)."""
