# pesigitg: `make demo` runs the end-to-end demo, `make test` the suite, `make bench`
# the benchmarks. Each installs what it needs: Debian packages when missing, and a
# virtualenv in .venv with the package built in place.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
# Debian packages the tests need: clang rebuilds the XDP object to check the shipped
# one, iproute2/ethtool drive the veth tests, bpftool shows maps where installed,
# bird2 and exabgp are the BGP daemons of the ECMP test and demo (contrib/bgp),
# prometheus (with promtool) scrapes the daemon in the observability test and checks
# contrib/prometheus, netplan.io validates contrib/netplan (netplan generate --root-dir),
# clang-19 builds the kfunc test program (BTF type tags for a kptr; clang-14 emits none).
TEST_DEBS  := clang-14 clang-19 llvm-14 iproute2 ethtool bpftool bird2 exabgp prometheus \
              netplan.io
BENCH_DEBS := $(TEST_DEBS) nginx-light libnginx-mod-stream
FASTPATH   := $(wildcard pesigitg/_fastpath/*.pyx pesigitg/_fastpath/*.pxi \
                         pesigitg/_fastpath/*.pxd pesigitg/_fastpath/includes/* bpf/include/*.h)

.PHONY: all test demo demo-ipv6 demo-ecmp bench fuzz bpf build debs-test debs-bench clean

all: build

# Install Debian packages only when missing; apt-get update only if something is.
# Debian starts the services of what it installs (prometheus on :9090, its node
# exporter): the tests run their own, so those are stopped and disabled again.
define install_debs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		for service in prometheus prometheus-node-exporter; do \
			case " $$missing " in *" prometheus "*) \
				if [ -d /run/systemd/system ]; then \
					systemctl disable --now $$service 2>/dev/null || true; fi ;; esac; \
		done; \
	fi
endef

debs-test:
	$(call install_debs,$(TEST_DEBS))

debs-bench:
	$(call install_debs,$(BENCH_DEBS))

$(VENV)/.stamp-install: pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[test,bench]'
	touch $@

# Rebuild the extensions in place when the Cython or C sources change.
$(VENV)/.stamp-build: $(VENV)/.stamp-install $(FASTPATH)
	$(PY) setup.py -q build_ext --inplace
	touch $@

build: $(VENV)/.stamp-build

test: debs-test build
	$(VENV)/bin/pytest

bench: debs-bench build
	$(PY) benchmarks/cid_decode.py
	$(PY) benchmarks/decide_cost.py
	$(PY) benchmarks/xdp_cost.py
	$(PY) benchmarks/veth_forward.py
	$(PY) benchmarks/lifecycle_loss.py

# The long differential fuzz against an AddressSanitizer build of the fast path
# (build/asan): frames one at a time, then in mixed batches through the loop's batch
# function on every AES path this CPU has (a quarter of FUZZ_FRAMES each), and the XDP
# program under BPF_PROG_TEST_RUN (needs root); then what a
# worker can write to the supervisor (its pipe, the UMEM state page, the counters'
# header). Prints the inputs tried, crashes and mismatches; FUZZ_FRAMES, FUZZ_XDP and
# FUZZ_TRUST set the budgets.
FUZZ_FRAMES ?= 20000000
FUZZ_XDP    ?= 1000000
FUZZ_TRUST  ?= 1000000
ASAN_BUILD  := build/asan
fuzz: debs-test build
	PESIGITG_SANITIZE=address $(PY) setup.py -q build_ext --build-lib $(ASAN_BUILD) \
		--build-temp $(ASAN_BUILD)/tmp --force
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		$(PY) -m tests.fuzz --frames $(FUZZ_FRAMES) --xdp $(FUZZ_XDP) \
		--fastpath $$(find $(ASAN_BUILD)/pesigitg/_fastpath -name 'fastpath*.so')
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		$(PY) -m tests.fuzz_trust --inputs $(FUZZ_TRUST) \
		--fastpath $$(find $(ASAN_BUILD)/pesigitg/_fastpath -name 'fastpath*.so')

# Real HTTP/3 through pesigitgd in throwaway namespaces (needs root): one balancer,
# then two behind a BGP/ECMP router. Exits non-zero if any step fails and removes
# everything it created either way.
demo: debs-test build
	$(PY) -m pesigitg.demo
	$(PY) -m pesigitg.demo.ecmp

demo-ipv6: debs-test build
	$(PY) -m pesigitg.demo --family 6

# The second part of `make demo` alone: two balancers behind a BGP/ECMP router (BIRD 2,
# ExaBGP from contrib/bgp): spread, a client moving between balancers, SIGTERM and
# kill -9 failover, return.
demo-ecmp: debs-test build
	$(PY) -m pesigitg.demo.ecmp

# Rebuild the shipped XDP object (needs clang-14); commit the result.
bpf: debs-test
	$(MAKE) -C bpf

clean:
	rm -rf build $(VENV) *.egg-info pesigitg/_fastpath/*.c pesigitg/_fastpath/*.so
