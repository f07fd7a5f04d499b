"""Pure transforms from main's tree to the promotion or rollback commit."""
