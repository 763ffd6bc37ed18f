"""Reports rendered from the verification history (the Kommunal-Dashboard)."""
