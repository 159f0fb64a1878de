"""Manifest builders, one module per dataset: each lists a dataset's files with their labels and
splits (`list_*`), and `build_*` probes them in parallel processes into a `BuildResult`: the rows
of the usable files and every file left out with its reason."""
from mmssl.data.builders.audioset import build_audioset, list_audioset
from mmssl.data.builders.folder import FOLDER_LAYOUTS, build_folder, list_folder
from mmssl.data.builders.hmdb51 import build_hmdb51, list_hmdb51
from mmssl.data.builders.kinetics import build_kinetics, list_kinetics
from mmssl.data.builders.probing import PROBE_TIMEOUT_S, BuildResult, Candidate, Listing, probe_candidates
from mmssl.data.builders.split_files import OFFICIAL_SPLITS
from mmssl.data.builders.ssv2 import build_ssv2, list_ssv2
from mmssl.data.builders.ucf101 import build_ucf101, list_ucf101
from mmssl.data.builders.vggsound import build_vggsound, list_vggsound

__all__ = [
    "FOLDER_LAYOUTS", "OFFICIAL_SPLITS", "PROBE_TIMEOUT_S", "BuildResult", "Candidate", "Listing",
    "build_audioset", "build_folder", "build_hmdb51", "build_kinetics", "build_ssv2", "build_ucf101",
    "build_vggsound", "list_audioset", "list_folder", "list_hmdb51", "list_kinetics", "list_ssv2", "list_ucf101",
    "list_vggsound", "probe_candidates",
]
