# Veil: entry points. Every target installs what it is missing first (scripts/setup.sh).
# Addresses for up/demo: VEIL_LISTEN, VEIL_ADMIN, VEIL_KEYSERVICE, VEIL_UPSTREAM (README).
# VEIL_FILTER: the shell Envoy loads Veil with for demo and up (and docker compose):
# wasm (proxy-wasm, the default) or native (libveil.so as an Envoy dynamic module).
SHELL := bash
.DEFAULT_GOAL := help
VEIL_FILTER ?= wasm
.PHONY: help demo up down status test lint wasm bench fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

demo: ## start the stack (local key) and show a Moesif event before and after Veil [VEIL_FILTER=wasm|native]
	VEIL_FILTER=$(VEIL_FILTER) scripts/demo.sh

up: ## build what is missing and start the stack in the background; returns when ready [VEIL_FILTER=wasm|native]
	scripts/setup.sh
	VEIL_FILTER=$(VEIL_FILTER) scripts/stack.sh up

down: ## stop the stack
	scripts/stack.sh down

status: ## show whether the stack runs
	scripts/stack.sh status

test: ## install what is missing, build, lint and run every test
	scripts/test.sh

lint: ## rustfmt and clippy (unwrap/expect/panic/indexing denied in core, the roles and both shells)
	cargo fmt --all -- --check
	cargo clippy -q -p veil-core -p veil-roles -p veil-keyservice -p veil-e2e -p veil-relay -p veil-bench-transform --all-targets -- -D warnings
	cargo clippy -q -p veil-roles --features fake -- -D warnings
	cargo clippy -q -p veil-filter --target wasm32-wasip1 -- -D warnings
	cargo clippy -q -p veil-native -p veil-bench-floor-native --all-targets -- -D warnings

wasm: ## build the filter (target/wasm32-wasip1/release/veil_filter.wasm)
	cargo build -p veil-filter --target wasm32-wasip1 --release

bench: ## load benchmark, control vs each shell and its floor: make bench [SCENARIO=seal] [DURATION=5] [FILTER=wasm|native|both]
	scripts/setup.sh bench
	.venv/bin/python bench/run.py $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(DURATION),--duration $(DURATION)) $(if $(FILTER),--filter $(FILTER))

fuzz: ## fuzz every core parser (nightly): make fuzz [FUZZ_SECONDS=60] [FUZZ_KEEP=1 grows fuzz/corpus]
	scripts/setup.sh
	scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)
