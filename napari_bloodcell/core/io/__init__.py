"""Readers and writers for smear images, NIfTI volumes and box annotations (VOC, COCO, YOLO, CSV)."""
