"""Tools around the model: conversion, export, benchmarks, plots and data fetching."""
