#!/usr/bin/env python3
"""What warmpool's tests and benchmarks need on top of the generic testbed
(run by up.sh after bootstrap.py; idempotent).

Each consumer gets its own project, because warmpoold's reconciler deletes
every server that carries warmpool metadata and is unknown to its store: two
daemons sharing a project would delete each other's warm servers. So:

  project          user / password          used by
  warmpool-e2e     warmpool-e2e / e2epass   server/tests/e2e_testbed.rs,
                                            server/tests/check_cloud_testbed.rs
  warmpool-bench   warmpool-bench / benchpass   bench/src/bin/testbed-ttr.rs
  warmpool-noquota warmpool-noquota / noquotapass  check-cloud's "exhausted
                                            quota" case (instances quota 0)
  warmpool-member  warmpool-member / memberpass  e2e_testbed.rs's member-only
                                            pool user (no admin role)

('service', user 'pool', stays the reference testbed's project for trying
warmpoold by hand.)

Per project: a management network '<project>-net' for the pool servers'
first NIC, tenant-net shared to it (Neutron RBAC) so the pool user can create
the tenant's port, and quotas big enough for the e2e pools.

Roles: warmpool-e2e and warmpool-bench get 'admin' on their project (besides
'member'), because Allocate may attach a volume the *tenant* created: a
member of another project cannot even see it (Cinder answers 404), an admin
can read and attach it. With admin, Neutron lists every project's networks,
so each management network has a name of its own. warmpool-member has
'member' only: what a pool user without admin meets on a real cloud (Neutron
refuses it a fixed IP on tenant-net, and the delete of a port still bound).
Also an image 'mysql-8.0' (the name warmpool's example configs use) next to
'ostb-image': both are 1 KiB blobs the fake virt driver never reads.
"""
import os
import sys
import tempfile

import openstack

TENANT_PROJECT = "tenant"

PROJECTS = [
    # project, user, password, admin?, compute quota (instances, cores, ram MB)
    # 40 cores: db.huge (64 vCPU) never fits, which the e2e quota case uses.
    ("warmpool-e2e", "warmpool-e2e", "e2epass", True, (20, 40, 40960)),
    ("warmpool-bench", "warmpool-bench", "benchpass", True, (20, 40, 40960)),
    # No server fits: check-cloud must report the quota.
    ("warmpool-noquota", "warmpool-noquota", "noquotapass", False, (0, 0, 0)),
    # A member only, as a pool user may be on a real cloud.
    ("warmpool-member", "warmpool-member", "memberpass", False, (10, 20, 20480)),
]
# Cinder and Neutron quotas of every warmpool project.
VOLUMES, GIGABYTES, PORTS = 40, 400, 100
IMAGES = ["mysql-8.0"]


def say(*a):
    print("   bootstrap-warmpool:", *a, flush=True)


def main():
    c = openstack.connect(cloud="ostb-admin")
    member = c.identity.find_role("member")
    admin = c.identity.find_role("admin")
    tenant = c.identity.find_project(TENANT_PROJECT, domain_id="default")
    tenant_net = c.network.find_network("tenant-net", project_id=tenant.id)
    if member is None or tenant is None or tenant_net is None:
        raise SystemExit("run bootstrap.py identity and resources first "
                         "(role member, project tenant, tenant-net)")
    for name, user, password, is_admin, (instances, cores, ram) in PROJECTS:
        p = c.identity.find_project(name, domain_id="default")
        if not p:
            p = c.identity.create_project(name=name, domain_id="default",
                                          description="warmpool tests")
        u = c.identity.find_user(user, domain_id="default")
        if u:
            c.identity.update_user(u, password=password)
        else:
            u = c.identity.create_user(name=user, password=password,
                                       domain_id="default",
                                       default_project_id=p.id)
        c.identity.assign_project_role_to_user(p, u, member)
        if is_admin:
            c.identity.assign_project_role_to_user(p, u, admin)

        net = c.network.find_network(f"{name}-net", project_id=p.id)
        if not net:
            net = c.network.create_network(name=f"{name}-net",
                                           project_id=p.id)
        if not list(c.network.subnets(network_id=net.id)):
            c.network.create_subnet(name=f"{name}-subnet", network_id=net.id,
                                    project_id=p.id, ip_version=4,
                                    cidr="10.40.0.0/24", enable_dhcp=False)
        if not [r for r in c.network.rbac_policies(object_id=tenant_net.id)
                if r.target_project_id == p.id]:
            c.network.create_rbac_policy(object_type="network",
                                         object_id=tenant_net.id,
                                         action="access_as_shared",
                                         target_project_id=p.id,
                                         project_id=tenant.id)
        c.compute.update_quota_set(p.id, instances=instances, cores=cores,
                                   ram=ram)
        c.set_volume_quotas(p.id, volumes=VOLUMES, gigabytes=GIGABYTES)
        c.set_network_quotas(p.id, port=PORTS)
        say(f"project {name} (user {user}{', admin' if is_admin else ''}): "
            f"{name}-net, tenant-net shared, "
            f"quota instances={instances} cores={cores} ram={ram} "
            f"volumes={VOLUMES} gigabytes={GIGABYTES} ports={PORTS}")
    for image in IMAGES:
        if not c.image.find_image(image):
            with tempfile.NamedTemporaryFile(suffix=".img") as f:
                f.write(b"\0" * 1024)
                f.flush()
                c.create_image(image, filename=f.name, disk_format="raw",
                               container_format="bare", visibility="public",
                               wait=True)
    say("images", ", ".join(IMAGES))


if __name__ == "__main__":
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE",
                          os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                       "clouds.yaml"))
    sys.exit(main())
