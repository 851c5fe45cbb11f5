# Thin wrapper over CMake presets. Each target installs what it needs first (scripts/setup-deps.sh).
NWC_DATA ?= $(abspath ../shared/data)
export NWC_DATA
JOBS ?= $(shell nproc)

.PHONY: deps build test python-test demo asan-test asan-sdk-test tsan-test ci-long fuzz plugin-docs format format-check clean

deps:
	@bash scripts/setup-deps.sh

build: deps
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

test: build
	@ctest --preset release -j $(JOBS)

# The Python package's pytest suite alone (tests/python; `make test` runs it too).
python-test: build
	@ctest --preset release -R python_pytest

demo: build
	@bash scripts/demo.sh build/release

asan-test: deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	@ctest --preset asan -j $(JOBS)

# AddressSanitizer + UBSan over everything that does not need the model runtime (SDK, formats,
# host, plugins, CLI without LibTorch, fuzz regressions): the sanitizer tier of the fast CI.
asan-sdk-test: deps
	@cmake --preset asan-sdk >/dev/null
	@cmake --build --preset asan-sdk -j $(JOBS)
	@ctest --preset asan-sdk -j $(JOBS)

# The long CI tier: the whole suite, runtime included, under AddressSanitizer + UBSan.
ci-long: asan-test

# ThreadSanitizer over the tests labelled `parallel` (parallel compression and decoding).
tsan-test: deps
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS) --target test_host test_golden test_determinism
	@ctest --preset tsan -j $(JOBS)

# libFuzzer targets (tests/fuzz/README.md), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
fuzz: build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(JOBS) bash scripts/fuzz.sh

# Regenerates docs/plugins/ from the bundled plugins' schemas.
plugin-docs: build
	@bash scripts/gen-plugin-docs.sh build/release

format:
	@git ls-files '*.c' '*.h' '*.cpp' '*.hpp' | xargs clang-format -i

format-check:
	@git ls-files '*.c' '*.h' '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror

clean:
	@rm -rf build
