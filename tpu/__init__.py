"""TPU VM providers (Cloud TPU and a local stand-in), remote command builders and error
classification. Used by the provision/smoke/validate/reap flows; never by grpo_core."""
