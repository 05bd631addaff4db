"""CRM integrations: account facts (ARR, owner, renewal date) pulled from the CRM."""
