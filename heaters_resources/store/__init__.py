"""The object store (local folder or S3, `objects`), the one module that builds object keys
(`keys`), and the reconciliation of objects with the rows that reference them (`cleanup`)."""
