.PHONY: integration
integration:
	@echo "integration: not yet (test environment issue)"
