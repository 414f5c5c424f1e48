# The two commands of README.md: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build; an unpinned torch pulls several GB of CUDA wheels (see DEVELOPERS.md).
TORCH := torch==2.13.0
# Demo cities the shipped model is trained on: never the demo's own seed (7).
MODEL_SEEDS := 101 102 103 104 105 106
MODEL := models/weights/urbanfusion-demo.onnx
TEACHER := models/weights/urbanfusion-teacher.onnx
MODEL_CITIES := build/model-cities
# The teacher: the ablation's best row (benchmarks/demo_accuracy.py, 3 seeds): ConvLSTM activity
# encoder and deep distillation on top of the default cross-attention fusion.
TEACHER_OPTIONS := --activity-encoder convlstm --distill 0.5
# The shipped default: a student distilled from the teacher, about 2.6x its speed on onnxruntime
# CPU and as accurate on the unseen demo city (benchmarks/student.py, 3 seeds).
MODEL_OPTIONS := --image-encoder resnet --activity-encoder convlstm --fusion concat \
	--image-width 16 --features 64 --distill 0.5 --teacher $(TEACHER)
# The real data the demo cities' daily rhythms come from, when it sits beside the repository (the
# generator's built-in copy holds the same numbers, so the model is the same without it).
HELSINKI := ../shared/data/mobility/helsinki_dynpop

.PHONY: demo test test-fast typecheck model lint gpu clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/urbanfusion demo --out out/demo

# Two test processes (pytest-xdist): most tests wait on a CLI subprocess's imports, one core
# each, so two at a time fill this 2-core machine (551 s -> 347 s for the whole suite).
PYTEST := $(BIN)/python -m pytest -q -n 2
# The package's bytecode, as a pip install writes it: each test's CLI subprocess then reads it
# instead of compiling the package again (Python writes none on import where
# PYTHONDONTWRITEBYTECODE is set, as on this machine and some CI images).
BYTECODE := $(BIN)/python -m compileall -q pipeline ingest preprocess models workflows

test: $(VENV)/.dev typecheck
	$(BYTECODE)
	$(PYTEST)

# The edit-run loop: the tests not marked slow (tests/conftest.py), under a minute.
test-fast: $(VENV)/.dev
	$(BYTECODE)
	$(PYTEST) -m "not slow"

# mypy, strict on pipeline/, ingest/, preprocess/ and models/ (pyproject.toml). It sees the
# namespace through links: the editable install's import hook is invisible to it.
TYPECHECK := build/typecheck
typecheck: $(VENV)/.dev
	rm -rf $(TYPECHECK)/urbanfusion && mkdir -p $(TYPECHECK)/urbanfusion
	for d in pipeline ingest preprocess models workflows; do \
		ln -s ../../../$$d $(TYPECHECK)/urbanfusion/$$d; done
	ln -s ../../../workflows/api $(TYPECHECK)/urbanfusion/api
	cd $(TYPECHECK) && MYPYPATH=. ../../$(BIN)/mypy --config-file ../../pyproject.toml \
		$(foreach p,pipeline ingest preprocess models workflows api,-p urbanfusion.$(p))

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-create the shipped model from demo cities of MODEL_SEEDS (a few minutes on 2 cores).
model: $(VENV)/.dev
	rm -rf $(MODEL_CITIES)
	for s in $(MODEL_SEEDS); do $(BIN)/urbanfusion demo-city $(MODEL_CITIES)/city-$$s --seed $$s \
		$(if $(wildcard $(HELSINKI)),--activity-from $(HELSINKI)) >/dev/null || exit 1; done
	$(BIN)/urbanfusion train $(foreach s,$(MODEL_SEEDS),$(MODEL_CITIES)/city-$(s)/city.yaml) \
		$(foreach s,$(MODEL_SEEDS),--labels $(MODEL_CITIES)/city-$(s)/zones.gpkg) \
		--out $(TEACHER) --checkpoint $(MODEL_CITIES)/teacher.ckpt --seed 0 $(TEACHER_OPTIONS)
	$(BIN)/urbanfusion train $(foreach s,$(MODEL_SEEDS),$(MODEL_CITIES)/city-$(s)/city.yaml) \
		$(foreach s,$(MODEL_SEEDS),--labels $(MODEL_CITIES)/city-$(s)/zones.gpkg) \
		--out $(MODEL) --checkpoint $(MODEL_CITIES)/model.ckpt --seed 0 $(MODEL_OPTIONS)

# Swap the CPU onnxruntime for onnxruntime-gpu (both provide the same module).
gpu: $(VENV)/.runtime
	$(BIN)/pip uninstall -q -y onnxruntime
	$(BIN)/pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.18"

clean:
	rm -rf out build $(VENV)
