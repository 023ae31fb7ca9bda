"""Pixels to faces: decoding images safely, finding faces, cropping them as FER2013 framed its
faces, drawing decisions on photos, and video frames and tracks."""
