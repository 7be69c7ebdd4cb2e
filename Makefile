# The commands of the README. Everything else is in hack/ and tests/.
.PHONY: up down test conformance kubeadm kubeadm-down

up:    ## build bosun and the test image, run bosun on examples/, show pods and logs
	bash hack/up.sh

down:  ## remove the example pods and stop bosun (nothing left running)
	bash hack/down.sh

test:  ## the whole test suite (what .ci/run runs)
	bash hack/test.sh

conformance:  ## the upstream [NodeConformance] e2e specs against a `make up` cluster (~30 min)
	bash tests/conformance/run.sh

kubeadm:  ## a real cluster from `kubeadm init` on this machine, bosun as its kubelet, kube-proxy, CoreDNS, flannel
	bash hack/kubeadm.sh up

kubeadm-down:  ## kubeadm reset's work for `make kubeadm`: nothing left
	bash hack/kubeadm.sh down
