# Two commands for a newcomer (Debian/Ubuntu, Python 3.11+):
#   make run    run the gateway on 127.0.0.1:5060 with conf/dev.toml
#   make test   install what the tests need, then ruff, mypy and pytest
PYTHON ?= python3
VENV ?= .venv
export PYTHON VENV

.PHONY: run test check-config

run:
	bash scripts/venv.sh
	$(VENV)/bin/python -m gateway run --config conf/dev.toml

test:
	bash scripts/test.sh

check-config:
	bash scripts/venv.sh
	$(VENV)/bin/python -m gateway check-config conf/gateway.toml
	$(VENV)/bin/python -m gateway check-config conf/dev.toml
