# mock-kind on a kind cluster: make kind images load deploy.
# Included by the root Makefile (`include deploy/deploy.mk`); every target is idempotent.
#
#   make kind [KUBE_VERSION=1.32.2]       create the kind cluster (if absent), scheduler wired to the extender
#   make kind PLACEMENT=affinity          the same without the extender configuration (affinity mode)
#   make images [IMAGE_TAG=dev]           build the three images for this machine's platform
#   make images.push IMAGE_PREFIX=ghcr.io/you [PLATFORMS=linux/amd64,linux/arm64]
#   make load                             put the images on the kind nodes
#   make deploy [OVERLAY=kind|dev|scale]  kubectl apply -k deploy/overlays/$(OVERLAY), wait for rollout
#   make deploy OVERLAY=metrics           kind + hollow-node's own metrics.k8s.io (kubectl top, HPA; no metrics-server)
#   make deploy PLACEMENT=affinity        = OVERLAY=affinity: no extender, the webhook places pods
#   make undeploy [OVERLAY=...]           remove it (hollow nodes first, so they delete their Nodes)
#   make nodes REPLICAS=10 NODES=1000     resize the hollow nodes (the pool's nodes, shared by the replicas)
#   make secret.load [FILE=~/.docker/config.json]  registry credentials for private images
#   make kind.delete                      delete the kind cluster

DEPLOY_DIR := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
DEPLOY_ROOT := $(patsubst %/,%,$(dir $(DEPLOY_DIR)))

KIND ?= kind
DOCKER ?= docker
KUBECTL ?= kubectl

KIND_CLUSTER ?= mock-kind
# Empty: kind's default node image. Otherwise kindest/node:v$(KUBE_VERSION) (>= 1.25).
KUBE_VERSION ?=
KIND_NODE_IMAGE ?= $(if $(KUBE_VERSION),kindest/node:v$(KUBE_VERSION))
# kubectl context of the target cluster; empty means kubectl's current context.
KUBE_CONTEXT ?= kind-$(KIND_CLUSTER)
# extender: kube-scheduler calls the extender (deploy/kind/cluster.yaml, overlays/kind);
# affinity: the webhook writes the placement into pods (cluster-affinity.yaml, overlays/affinity).
PLACEMENT ?= extender
ifeq ($(filter extender affinity,$(PLACEMENT)),)
$(error PLACEMENT=$(PLACEMENT): use extender or affinity)
endif
KIND_CONFIG := $(if $(filter affinity,$(PLACEMENT)),cluster-affinity.yaml,cluster.yaml)
OVERLAY ?= $(if $(filter affinity,$(PLACEMENT)),affinity,kind)

MOCK_KIND_VERSION := $(shell awk -F'"' '/^version *=/ { print $$2; exit }' '$(DEPLOY_ROOT)/Cargo.toml')
IMAGE_PREFIX ?= mock-kind
# The tags the overlays use: `dev` for OVERLAY=dev, the workspace version otherwise.
IMAGE_TAG ?= $(if $(filter dev,$(OVERLAY)),dev,$(MOCK_KIND_VERSION))
PLATFORMS ?= linux/amd64,linux/arm64
MOCK_KIND_IMAGES := scheduler webhook hollow-node

DEPLOY_NAMESPACE := mock-kind
# The extender's own namespace: it alone needs hostNetwork (deploy/base/namespace.yaml).
EXTENDER_NAMESPACE := mock-kind-extender
REGISTRY_SECRET := mock-kind-registry
FILE ?= $(HOME)/.docker/config.json

KUBECTL_CTX = $(KUBECTL)$(if $(KUBE_CONTEXT), --context $(KUBE_CONTEXT))

# $(call need,<program>,<where to get it>) and $(need_cluster): recipe lines that fail with
# a one-line message naming what is missing.
need = @command -v $(1) >/dev/null 2>&1 || { echo "make $@ needs $(1): $(2)" >&2; exit 1; }
need_cluster = @$(KUBECTL_CTX) get --raw /readyz >/dev/null 2>&1 || { echo "make $@: cannot reach the cluster$(if $(KUBE_CONTEXT), of kubectl context $(KUBE_CONTEXT)): run 'make kind', or set KUBE_CONTEXT" >&2; exit 1; }

.PHONY: kind kind.delete images images.push load deploy undeploy nodes secret.load

kind: ## Create the kind cluster if absent (KUBE_VERSION=), scheduler wired to the extender
	$(call need,$(KIND),https://kind.sigs.k8s.io)
	$(call need,$(DOCKER),https://docs.docker.com/get-docker/)
	@if $(KIND) get clusters 2>/dev/null | grep -x '$(KIND_CLUSTER)' >/dev/null; then \
	  echo "kind cluster $(KIND_CLUSTER) exists: nothing to do"; \
	  [ '$(PLACEMENT)' = affinity ] || $(DOCKER) exec $(KIND_CLUSTER)-control-plane test -f /etc/kubernetes/mock-kind/scheduler-config.yaml 2>/dev/null || \
	    echo "warning: cluster $(KIND_CLUSTER) was not created by 'make kind': its kube-scheduler does not call the extender ('make kind.delete kind' recreates it)" >&2; \
	  exit 0; \
	fi; \
	version='$(KUBE_VERSION)'; \
	if [ -n "$$version" ]; then \
	  major=$${version%%.*}; rest=$${version#*.}; minor=$${rest%%.*}; \
	  case "$$major.$$minor" in *[!0-9.]*|.*|*.) echo "make kind: KUBE_VERSION=$$version is not a version like 1.32.2" >&2; exit 1;; esac; \
	  if [ "$$major" -lt 1 ] || { [ "$$major" -eq 1 ] && [ "$$minor" -lt 25 ]; }; then \
	    echo "make kind: KUBE_VERSION=$$version is too old: deploy/kind/scheduler/ is kubescheduler.config.k8s.io/v1 (Kubernetes >= 1.25)" >&2; exit 1; \
	  fi; \
	fi; \
	echo "creating kind cluster $(KIND_CLUSTER)$(if $(KIND_NODE_IMAGE), from $(KIND_NODE_IMAGE))"; \
	sed 's|\(hostPath: \)deploy/kind/|\1$(DEPLOY_DIR)/kind/|' '$(DEPLOY_DIR)/kind/$(KIND_CONFIG)' | \
	  $(KIND) create cluster --name '$(KIND_CLUSTER)' $(if $(KIND_NODE_IMAGE),--image '$(KIND_NODE_IMAGE)') --config=- && \
	echo "cluster $(KIND_CLUSTER) is up; its pods stay Pending until the extender runs: make images load deploy"

kind.delete: ## Delete the kind cluster
	$(call need,$(KIND),https://kind.sigs.k8s.io)
	@if $(KIND) get clusters 2>/dev/null | grep -x '$(KIND_CLUSTER)' >/dev/null; then \
	  $(KIND) delete cluster --name '$(KIND_CLUSTER)'; \
	else echo "no kind cluster $(KIND_CLUSTER): nothing to do"; fi

images: ## Build the three images for this machine (IMAGE_TAG=, IMAGE_PREFIX=)
	$(call need,$(DOCKER),https://docs.docker.com/get-docker/)
	@set -e; for s in $(MOCK_KIND_IMAGES); do \
	  echo "building $(IMAGE_PREFIX)/$$s:$(IMAGE_TAG)"; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -f '$(DEPLOY_DIR)/docker/'$$s.Dockerfile -t '$(IMAGE_PREFIX)/'$$s:'$(IMAGE_TAG)' '$(DEPLOY_ROOT)'; \
	done

images.push: ## Multi-platform images, pushed: IMAGE_PREFIX=ghcr.io/you [PLATFORMS=]
	$(call need,$(DOCKER),https://docs.docker.com/get-docker/)
	@$(DOCKER) buildx version >/dev/null 2>&1 || { echo "make images.push needs docker buildx: https://docs.docker.com/build/install-buildx/" >&2; exit 1; }
	@case '$(IMAGE_PREFIX)' in */*) ;; *) echo "make images.push: set IMAGE_PREFIX to a registry path, e.g. IMAGE_PREFIX=ghcr.io/you" >&2; exit 1;; esac
	@set -e; for s in $(MOCK_KIND_IMAGES); do \
	  $(DOCKER) buildx build --platform '$(PLATFORMS)' -f '$(DEPLOY_DIR)/docker/'$$s.Dockerfile \
	    -t '$(IMAGE_PREFIX)/'$$s:'$(IMAGE_TAG)' --push '$(DEPLOY_ROOT)'; \
	done

load: ## Load the images into the kind cluster's nodes
	$(call need,$(KIND),https://kind.sigs.k8s.io)
	$(call need,$(DOCKER),https://docs.docker.com/get-docker/)
	@$(KIND) get clusters 2>/dev/null | grep -x '$(KIND_CLUSTER)' >/dev/null || { echo "make load: no kind cluster $(KIND_CLUSTER): run 'make kind'" >&2; exit 1; }
	@set -e; for s in $(MOCK_KIND_IMAGES); do \
	  img='$(IMAGE_PREFIX)/'$$s:'$(IMAGE_TAG)'; \
	  $(DOCKER) image inspect "$$img" >/dev/null 2>&1 || { echo "make load: image $$img is missing: run 'make images$(if $(filter dev,$(OVERLAY)), OVERLAY=dev)'" >&2; exit 1; }; \
	  $(KIND) load docker-image --name '$(KIND_CLUSTER)' "$$img"; \
	done

deploy: ## Apply a Kustomize overlay (OVERLAY=kind|dev|scale|metrics|affinity, or PLACEMENT=affinity) and wait for it
	$(call need,$(KUBECTL),https://kubernetes.io/docs/tasks/tools/)
	@[ -f '$(DEPLOY_DIR)/overlays/$(OVERLAY)/kustomization.yaml' ] || { echo "make deploy: no overlay '$(OVERLAY)' (deploy/overlays/: $$(ls '$(DEPLOY_DIR)/overlays' | tr '\n' ' '))" >&2; exit 1; }
	$(need_cluster)
	@node=$$($(KUBECTL) kustomize '$(DEPLOY_DIR)/overlays/$(OVERLAY)' | awk '$$1 == "nodeName:" && !n { print $$2; n = 1 }'); \
	if [ -n "$$node" ] && ! $(KUBECTL_CTX) get node "$$node" >/dev/null 2>&1; then \
	  echo "make deploy: overlay $(OVERLAY) binds the extender to node $$node (kind cluster mock-kind), which this cluster lacks;" >&2; \
	  echo "  use the cluster from 'make kind', or an overlay that sets the extender Deployment's spec.template.spec.nodeName to your control-plane node" >&2; \
	  exit 1; \
	fi
	@# The CRD first: the overlay's HollowNodePool cannot be applied before its kind exists.
	$(KUBECTL_CTX) apply -f '$(DEPLOY_DIR)/base/crd-hollownodepools.yaml'
	$(KUBECTL_CTX) wait --for=condition=Established --timeout=60s crd/hollownodepools.mock-kind.io
	$(KUBECTL_CTX) apply -k '$(DEPLOY_DIR)/overlays/$(OVERLAY)'
	@if $(KUBECTL) kustomize '$(DEPLOY_DIR)/overlays/$(OVERLAY)' | \
	  awk '/^---/ { d = 0 } /^kind: Deployment$$/ { d = 1 } d && /^  name: mock-kind-scheduler$$/ { f = 1 } END { exit !f }'; then \
	  $(KUBECTL_CTX) -n $(EXTENDER_NAMESPACE) rollout status deployment/mock-kind-scheduler --timeout=180s; \
	else echo "no extender Deployment in overlay $(OVERLAY) (affinity mode)"; fi
	$(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) rollout status deployment/mock-kind-webhook --timeout=180s
	$(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) rollout status statefulset/hollow-node --timeout=300s
	@# An overlay that registers hollow-node's metrics.k8s.io (components/metrics-api): wait until
	@# the aggregator reaches it, so `kubectl top` works when make returns.
	@if $(KUBECTL) kustomize '$(DEPLOY_DIR)/overlays/$(OVERLAY)' | grep -q '^kind: APIService$$'; then \
	  $(KUBECTL_CTX) wait --for=condition=Available --timeout=180s apiservice/v1beta1.metrics.k8s.io; \
	fi
	@$(KUBECTL_CTX) get nodes -l spoofed=true --no-headers 2>/dev/null | awk '{n++; if ($$2 == "Ready") r++} END {printf "hollow nodes: %d, Ready: %d\n", n, r}'

undeploy: ## Remove it (hollow nodes first, so they delete their Nodes)
	$(call need,$(KUBECTL),https://kubernetes.io/docs/tasks/tools/)
	$(need_cluster)
	@# Pools first, while hollow-node runs: its finalizer makes it delete their Nodes and Leases.
	@if $(KUBECTL_CTX) get crd hollownodepools.mock-kind.io >/dev/null 2>&1; then \
	  $(KUBECTL_CTX) delete hollownodepools --all --wait --timeout=180s; \
	fi
	@if $(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) get statefulset/hollow-node >/dev/null 2>&1; then \
	  $(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) scale statefulset/hollow-node --replicas=0; \
	  echo "waiting for the hollow-node pods to delete their Nodes and exit"; \
	  for i in $$(seq 180); do \
	    [ -z "$$($(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) get pods -l app.kubernetes.io/name=hollow-node -o name)" ] && break; \
	    [ "$$i" -lt 180 ] || { echo "make undeploy: hollow-node pods still running after 180 s" >&2; exit 1; }; \
	    sleep 1; \
	  done; \
	fi
	$(KUBECTL_CTX) delete -k '$(DEPLOY_DIR)/overlays/$(OVERLAY)' --ignore-not-found --wait
	$(if $(filter affinity,$(PLACEMENT)),,@echo "note: the cluster's kube-scheduler still calls the extender (ignorable: false): new pods stay Pending until 'make deploy' or 'make kind.delete kind'")

nodes: ## Resize the hollow nodes: REPLICAS=<pods> NODES=<nodes: the pool's, or per pod on the flags>
	$(call need,$(KUBECTL),https://kubernetes.io/docs/tasks/tools/)
	@[ -n '$(REPLICAS)$(NODES)' ] || { echo "usage: make nodes REPLICAS=10 NODES=1000 (either or both)" >&2; exit 1; }
	@case '$(REPLICAS)$(NODES)' in *[!0-9]*) echo "make nodes: REPLICAS and NODES must be whole numbers (got REPLICAS='$(REPLICAS)' NODES='$(NODES)')" >&2; exit 1;; esac
	$(need_cluster)
	@$(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) get statefulset/hollow-node >/dev/null || { echo "make nodes: no StatefulSet $(DEPLOY_NAMESPACE)/hollow-node: run 'make deploy' first" >&2; exit 1; }
	@# A StatefulSet running a pool (MOCK_KIND_POOL) is resized by scaling the pool: its replicas
	@# share the pool's nodes. On the flags, NODES is each replica's count.
	@if [ -n '$(NODES)' ]; then \
	  pool=$$($(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) get statefulset/hollow-node \
	    -o jsonpath='{.spec.template.spec.containers[?(@.name=="hollow-node")].env[?(@.name=="MOCK_KIND_POOL")].value}'); \
	  if [ -n "$$pool" ]; then \
	    echo "hollownodepool/$$pool: $(NODES) nodes"; \
	    $(KUBECTL_CTX) scale "hollownodepool/$$pool" --replicas=$(NODES); \
	  else \
	    $(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) set env statefulset/hollow-node -c hollow-node MOCK_KIND_NODES=$(NODES); \
	  fi; \
	fi
	$(if $(REPLICAS),$(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) scale statefulset/hollow-node --replicas=$(REPLICAS))
	$(KUBECTL_CTX) -n $(DEPLOY_NAMESPACE) rollout status statefulset/hollow-node --timeout=600s
	@echo "note: 'make deploy' puts the overlay's size back; for a lasting size, use or write an overlay (deploy/overlays/scale)"

secret.load: ## Registry credentials for private images: FILE=~/.docker/config.json
	$(call need,$(KUBECTL),https://kubernetes.io/docs/tasks/tools/)
	@[ -f '$(FILE)' ] || { echo "make secret.load: no file '$(FILE)': set FILE to a Docker config.json holding the registry's credentials" >&2; exit 1; }
	@grep -q '"auth"' '$(FILE)' || { echo "make secret.load: '$(FILE)' holds no inline credentials (\"auth\": a credsStore or credHelpers keeps them elsewhere); create the Secret yourself: kubectl -n $(DEPLOY_NAMESPACE) create secret docker-registry $(REGISTRY_SECRET) --docker-server=... --docker-username=... --docker-password=..." >&2; exit 1; }
	$(need_cluster)
	@set -e; for ns in $(DEPLOY_NAMESPACE) $(EXTENDER_NAMESPACE); do \
	  $(KUBECTL_CTX) create namespace $$ns --dry-run=client -o yaml | $(KUBECTL_CTX) apply -f -; \
	  $(KUBECTL_CTX) -n $$ns create secret generic $(REGISTRY_SECRET) --type=kubernetes.io/dockerconfigjson \
	    --from-file=.dockerconfigjson='$(FILE)' --dry-run=client -o yaml | $(KUBECTL_CTX) apply -f -; \
	done
	@echo "every mock-kind pod lists imagePullSecrets $(REGISTRY_SECRET): pods waiting on an image pull retry with it"
