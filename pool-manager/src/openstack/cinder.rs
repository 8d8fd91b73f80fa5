//! Cinder's JSON as warmpool reads it: volumes and the create body.

use crate::cloud::{NewVolumeSpec, Volume, VolumeOwner, VolumeStatus};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
pub struct VolumeBody {
    pub volume: CinderVolume,
}

#[derive(Debug, Deserialize)]
pub struct VolumesBody {
    pub volumes: Vec<CinderVolume>,
    /// Past `osapi_max_limit` (1000 by default), Cinder links the next page.
    #[serde(default)]
    pub volumes_links: Option<Vec<super::nova::Link>>,
}

#[derive(Debug, Deserialize)]
pub struct CinderVolume {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub size: Option<u32>,
    #[serde(default)]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(default)]
    pub volume_type: Option<String>,
    #[serde(default)]
    pub multiattach: Option<bool>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    /// The owning project: Cinder's policy
    /// `volume_extension:volume_tenant_attribute` decides who sees it (by
    /// default a reader of the volume's project, and an admin).
    #[serde(default, rename = "os-vol-tenant-attr:tenant_id")]
    pub tenant_id: Option<String>,
}

/// `GET /os-availability-zone` (Cinder's, and Nova's, which has the same shape).
#[derive(Debug, Deserialize)]
pub struct ZonesBody {
    /// Required: Nova and Cinder answer an empty list when they have no
    /// zone, so an answer without it is not theirs (a proxy's page), and
    /// read as "no zones" it would refuse every pool's zone as missing.
    #[serde(rename = "availabilityZoneInfo")]
    pub availability_zone_info: Vec<Zone>,
}

#[derive(Debug, Deserialize)]
pub struct Zone {
    #[serde(rename = "zoneName")]
    pub zone_name: String,
    #[serde(rename = "zoneState", default)]
    pub zone_state: ZoneState,
}

#[derive(Debug, Default, Deserialize)]
pub struct ZoneState {
    #[serde(default)]
    pub available: bool,
}

#[derive(Debug, Deserialize)]
pub struct Attachment {
    #[serde(default)]
    pub server_id: Option<String>,
}

pub fn volume_status(status: &str) -> VolumeStatus {
    match status {
        "creating" | "downloading" => VolumeStatus::Creating,
        "available" => VolumeStatus::Available,
        "attaching" | "reserved" => VolumeStatus::Attaching,
        "in-use" => VolumeStatus::InUse,
        "detaching" => VolumeStatus::Detaching,
        "error" => VolumeStatus::Error,
        other => VolumeStatus::Other(other.to_owned()),
    }
}

/// warmpool's view. `availability_zone` is Cinder's, translated back to the
/// pool AZ by the caller when the driver maps AZs; `owner` is told from
/// `tenant_id` by the caller, which knows warmpool's own project.
pub fn to_volume(v: CinderVolume, owner: VolumeOwner) -> Volume {
    Volume {
        name: v.name.unwrap_or_default(),
        status: volume_status(v.status.as_deref().unwrap_or_default()),
        availability_zone: v.availability_zone.unwrap_or_default(),
        size_gib: v.size.unwrap_or_default(),
        attached_to: v
            .attachments
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.server_id)
            .collect(),
        volume_type: v.volume_type,
        multiattach: v.multiattach.unwrap_or_default(),
        metadata: v.metadata.unwrap_or_default(),
        owner,
        id: v.id,
    }
}

/// `POST /volumes`. `availability_zone` is the Cinder AZ (after mapping).
/// The project is the session's: a member cannot create in another project.
/// Metadata (the order's tenant) goes with the create, so no volume of an
/// order is ever without it.
pub fn create_body(spec: &NewVolumeSpec, availability_zone: Option<&str>) -> serde_json::Value {
    let mut volume = serde_json::json!({ "size": spec.size_gib, "name": spec.name });
    if !spec.metadata.is_empty() {
        volume["metadata"] = serde_json::json!(spec.metadata);
    }
    if let Some(az) = availability_zone {
        volume["availability_zone"] = serde_json::json!(az);
    }
    if let Some(kind) = &spec.volume_type {
        volume["volume_type"] = serde_json::json!(kind);
    }
    serde_json::json!({ "volume": volume })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_its_zone_list_is_unreadable_not_empty() {
        assert!(serde_json::from_str::<ZonesBody>("{}").is_err());
        let none: ZonesBody = serde_json::from_str(r#"{"availabilityZoneInfo": []}"#).unwrap();
        assert!(none.availability_zone_info.is_empty());
    }

    #[test]
    fn an_attached_volume_names_its_server() {
        let body: VolumeBody = serde_json::from_str(
            r#"{"volume": {"id": "6d164150-4c0f-447a-896d-a825918714cd", "name": "warmpool-order-1", "status": "in-use",
                "availability_zone": "nova", "size": 1, "bootable": "false",
                "attachments": [{"id": "6d16", "attachment_id": "a1", "volume_id": "6d16", "server_id": "a4d9add2-ef0a-4928-b1b8-6525fdb81913", "host_name": null, "device": "/dev/vdb"}]}}"#,
        )
        .unwrap();
        let v = to_volume(body.volume, VolumeOwner::NotShown);
        assert_eq!(v.status, VolumeStatus::InUse);
        assert_eq!(v.attached_to, vec!["a4d9add2-ef0a-4928-b1b8-6525fdb81913"]);
        assert_eq!((v.size_gib, v.availability_zone.as_str()), (1, "nova"));
        assert!(!v.multiattach);
    }

    /// A volume of a multiattach type attached to two servers, as Cinder
    /// 3.x shows it: the allocator refuses such a volume, which Cinder
    /// would let a second order attach.
    #[test]
    fn a_multiattach_volume_says_so_with_its_type_and_every_server() {
        let body: VolumeBody = serde_json::from_str(
            r#"{"volume": {"id": "8b1ab9b2-5f2e-4c4d-9b9e-7c3a0e4f5d61", "name": "tenant-db", "status": "in-use",
                "availability_zone": "nova", "size": 20, "bootable": "false", "encrypted": false,
                "volume_type": "multiattach", "multiattach": true, "replication_status": null,
                "attachments": [
                    {"id": "8b1ab9b2", "attachment_id": "a1", "volume_id": "8b1ab9b2", "server_id": "a4d9add2-ef0a-4928-b1b8-6525fdb81913", "host_name": "compute-1", "device": "/dev/vdb", "attached_at": "2024-05-02T10:00:00.000000"},
                    {"id": "8b1ab9b2", "attachment_id": "a2", "volume_id": "8b1ab9b2", "server_id": "f3b2c1d0-1111-4e2a-9c3b-0a1b2c3d4e5f", "host_name": "compute-2", "device": "/dev/vdb", "attached_at": "2024-05-02T10:00:01.000000"}]}}"#,
        )
        .unwrap();
        let v = to_volume(body.volume, VolumeOwner::NotShown);
        assert!(v.multiattach);
        assert_eq!(v.volume_type.as_deref(), Some("multiattach"));
        assert_eq!(
            v.attached_to,
            vec![
                "a4d9add2-ef0a-4928-b1b8-6525fdb81913",
                "f3b2c1d0-1111-4e2a-9c3b-0a1b2c3d4e5f"
            ]
        );
    }

    #[test]
    fn unknown_statuses_are_kept() {
        let body: VolumeBody = serde_json::from_str(
            r#"{"volume": {"id": "v", "status": "maintenance", "name": null, "attachments": []}}"#,
        )
        .unwrap();
        assert_eq!(
            to_volume(body.volume, VolumeOwner::NotShown).status,
            VolumeStatus::Other("maintenance".into())
        );
    }

    #[test]
    fn the_create_body_has_size_name_az_and_the_tenant_tag() {
        let mut spec = NewVolumeSpec {
            name: "warmpool-o1".into(),
            size_gib: 20,
            volume_type: None,
            availability_zone: "az1".into(),
            metadata: BTreeMap::new(),
        };
        assert_eq!(
            create_body(&spec, Some("nova")),
            serde_json::json!({"volume": {"size": 20, "name": "warmpool-o1", "availability_zone": "nova"}})
        );
        spec.metadata
            .insert(crate::cloud::META_TENANT.into(), "tenant-a".into());
        assert_eq!(
            create_body(&spec, Some("nova")),
            serde_json::json!({"volume": {"size": 20, "name": "warmpool-o1", "availability_zone": "nova",
                "metadata": {"warmpool.tenant": "tenant-a"}}})
        );
    }

    /// Cinder's metadata and, where its policy shows it, the owning project.
    #[test]
    fn a_volumes_metadata_and_project_are_read() {
        let body: VolumeBody = serde_json::from_str(
            r#"{"volume": {"id": "v", "status": "available", "name": "warmpool-o1-x", "attachments": [],
                "metadata": {"warmpool.tenant": "tenant-b", "readonly": "False"},
                "os-vol-tenant-attr:tenant_id": "45e74f11629f4db4a5812a02b1f9967a"}}"#,
        )
        .unwrap();
        assert_eq!(
            body.volume.tenant_id.as_deref(),
            Some("45e74f11629f4db4a5812a02b1f9967a")
        );
        let v = to_volume(body.volume, VolumeOwner::Warmpool);
        assert_eq!(v.tagged_tenant(), Some("tenant-b"));
        assert_eq!(v.owner, VolumeOwner::Warmpool);
    }
}
