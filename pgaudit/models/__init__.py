"""pgaudit.models"""
