# husai: the two commands a new user needs are `make demo` and `make test`; both do all set-up themselves.
SHELL := /bin/bash
.DEFAULT_GOAL := build
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := safetensors config saelens
HUSAI := $(BUILD)/bin/husai
CMAKE_FLAGS ?=

.PHONY: bench-compare deps deps-test configure build build-cli build-asan demo test test-unit test-asan format format-check lint \
        smoke bench grok-nanda sae-table clean build-fuzz fuzz reproduce-phase4a ablate-core adaptive-l0 \
        adaptive-l0-control release-gate audit benchmark-slice consistency-sweep golden-update \
        transformer-seeds

deps:
	@bash scripts/setup.sh

deps-test:
	@bash scripts/setup.sh --test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: deps $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHUSAI_SANITIZE=ON -DHUSAI_BUILD_BENCH=OFF

build-asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS) --target husai_unit_tests husai_cli \
	  $(addprefix husai_fuzz_replay_,$(FUZZ_TARGETS))

# libFuzzer targets (clang, ASan + UBSan) for the safetensors reader, the YAML config loader and the SAE
# cfg.json loader. `make fuzz` runs each for FUZZ_SECONDS from its seed corpus in tests/fuzz/corpus/<target>/;
# new inputs go to $(FUZZ_BUILD)/corpus/, crashes to $(FUZZ_BUILD)/artifacts/.
$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" -DHUSAI_FUZZ=ON -DHUSAI_NATIVE=OFF -DHUSAI_BUILD_BENCH=OFF

build-fuzz: deps-test $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addprefix husai_fuzz_,$(FUZZ_TARGETS))

fuzz: build-fuzz
	bash tests/fuzz/run_fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The main job: train the default transformer until it groks, extract its activations, report. Builds
# only what it runs (the CLI), not the unit tests and benchmarks.
build-cli: configure
	cmake --build $(BUILD) -j $(JOBS) --target husai_cli

demo: build-cli
	$(HUSAI) demo

test: deps-test format-check build build-asan
	cd $(BUILD) && ctest --output-on-failure -j 1 --timeout 1200
	$(MAKE) --no-print-directory test-asan
	$(MAKE) --no-print-directory smoke
	@echo "make test: all checks passed"

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  OMP_NUM_THREADS=2 HUSAI_BIN=$(CURDIR)/$(ASAN_BUILD)/bin/husai $(ASAN_BUILD)/bin/husai_unit_tests --gtest_brief=1
	@for t in $(FUZZ_TARGETS); do \
	  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(ASAN_BUILD)/bin/husai_fuzz_replay_$$t tests/fuzz/corpus/$$t || exit 1; \
	done

SOURCES = $(shell git ls-files -co --exclude-standard -- 'src/*.cpp' 'src/*.hpp' 'tests/*.cpp' 'tests/*.hpp' 'bench/*.cpp')

format:
	clang-format -i $(SOURCES)

format-check: deps-test
	@clang-format --dry-run --Werror $(SOURCES) && echo "format-check: ok"

lint: format-check build
	clang-tidy -p $(BUILD) --quiet --extra-arg=-Wno-unknown-warning-option $(filter src/%.cpp,$(SOURCES))

# Tiny end-to-end chain (train, evaluate, extract) in well under a minute.
smoke: build
	bash scripts/smoke.sh $(HUSAI)

# Rewrite tests/golden/default_chain.sha256 from this build (run on purpose, after a change meant to change the
# default chain's numbers; commit the file with that change).
golden-update: build
	bash tests/golden/golden_default_chain.sh $(HUSAI) $(BUILD)/golden --update

bench: build deps-test
	bash bench/run_bench.sh $(BUILD)

# husai compare on two 8,192 x 768 SAEs beside SciPy (linear_sum_assignment + NumPy cosines), then 32,768 alone.
bench-compare: build-cli deps-test
	/usr/bin/python3 bench/compare_large.py --husai $(HUSAI) --n 8192
	/usr/bin/python3 bench/compare_large.py --husai $(HUSAI) --n 32768 --no-scipy

# Every SAE architecture on the latest demo's activations (from its phase4a run's results.json): L0, EV, dead fraction, CE loss score, time, plateau.
sae-table: build-cli
	@run=$$(ls -d results/demo/*/ 2>/dev/null | tail -1); \
	if [[ -z "$$run" ]]; then echo "sae-table: run 'make demo' first"; exit 1; fi; \
	res=results/phase4a/$$(basename $$run)/results.json; \
	if [[ ! -f "$$res" ]]; then echo "sae-table: $$res missing (a demo from an older husai?); run 'make demo'"; exit 1; fi; \
	acts=$$(grep -o '"activations": *"[^"]*"' "$$res" | head -1 | sed 's/.*: *"//; s/"$$//'); \
	tf=$$(grep -o '"dir": *"[^"]*cache/transformer/[^"]*"' "$$res" | head -1 | sed 's/.*: *"//; s/"$$//'); \
	if [[ -z "$$acts" || -z "$$tf" ]]; then echo "sae-table: no activations or transformer in $$res"; exit 1; fi; \
	bash scripts/sae_table.sh $(HUSAI) "$$acts" "$$tf" results/sae-table

# The literature grokking set-up (Nanda et al. 2023): long.
grok-nanda: build-cli
	$(HUSAI) train-transformer --config configs/transformer/nanda2023.yaml --out results/grok-nanda --resume

# The runbook's experiments (docs/experiments.md); each writes EXP_ROOT/NAME/<run_id>/ and registry rows.
EXP_ROOT ?= results

reproduce-phase4a: build-cli
	$(HUSAI) experiment phase4a --config configs/experiments/phase4a.yaml --out $(EXP_ROOT)

ablate-core: build-cli
	$(HUSAI) experiment ablations --config configs/experiments/ablations.yaml --out $(EXP_ROOT)

adaptive-l0: build-cli
	$(HUSAI) experiment adaptive-l0 --config configs/experiments/adaptive-l0.yaml --out $(EXP_ROOT)

adaptive-l0-control: build-cli
	$(HUSAI) experiment adaptive-l0 --config configs/experiments/adaptive-l0.yaml --k-candidates 32 --out $(EXP_ROOT)

benchmark-slice: build-cli
	$(HUSAI) experiment benchmark-slice --config configs/experiments/benchmark-slice.yaml --out $(EXP_ROOT)

consistency-sweep: build-cli
	$(HUSAI) experiment consistency-sweep --config configs/experiments/consistency-sweep.yaml --out $(EXP_ROOT)

transformer-seeds: build-cli
	$(HUSAI) experiment transformer-seeds --config configs/experiments/transformer-seeds.yaml --out $(EXP_ROOT)

release-gate: build-cli
	$(HUSAI) experiment release-gate --config configs/experiments/release-gate.yaml --out $(EXP_ROOT) --fail-on-gate-fail

audit: build-cli
	$(HUSAI) audit --root $(EXP_ROOT)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
