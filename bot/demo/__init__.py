"""`stallwatch demo`: a synthetic B2B SaaS company run through the real pipeline."""
